"""Pure encoders and decoders of the client and peer protocols, and their framing."""
