"""Zab-like atomic broadcast as a pure state machine: peer messages, election, roles, Ready."""
