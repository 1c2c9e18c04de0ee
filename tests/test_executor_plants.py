"""The simulator runs the members' own Ready executor, so a bug planted in that executor is a
bug the simulator must find: a short seed sweep catches each plant below, and the same sweep
passes with the executor as it is.

The plants are subclasses (the executor allows interpreted subclasses in the compiled build
too), never patches of the compiled module.
"""

from __future__ import annotations

import pytest

from zkpy.core.tree import ApplyResult
from zkpy.server.executor import Messages, ReadyExecutor
from zkpy.testing.sim import InvariantViolation, Simulation
from zkpy.zab.replica import Ready

SEEDS = range(12)
DURATION_MS = 4_000


class AcksBeforeDurable(ReadyExecutor):
    """Sends the acknowledgements with the proposals, before the Ready is durable: a leader
    may then count a follower that has not logged the record, and reply too early."""

    def split(self, ready: Ready) -> tuple[Messages, Messages]:
        return list(ready.messages), []


class RepliesBeforeEvents(ReadyExecutor):
    """Answers a write before sending the watch events its change causes."""

    def notify(self, result: ApplyResult) -> None:
        self.reply(result)
        super().notify(result)


def run_and_check(seed: int, executor: type[ReadyExecutor]) -> None:
    """One seeded run, settled and checked: InvariantViolation if the checks fail."""
    sim = Simulation(seed, executor=executor)
    sim.run_until(DURATION_MS)
    sim.settle()
    sim.check_final()


def sweep(executor: type[ReadyExecutor]) -> list[str]:
    """The violations a short sweep finds (one per failing seed, each naming its seed)."""
    found = []
    for seed in SEEDS:
        try:
            run_and_check(seed, executor)
        except InvariantViolation as err:
            violation = str(err)
        else:
            continue
        assert f"seed {seed}," in violation
        found.append(violation)
    return found


def test_the_sweep_passes_with_the_executor_members_run() -> None:
    assert sweep(ReadyExecutor) == []


@pytest.mark.parametrize(
    ("plant", "symptom"),
    [
        (AcksBeforeDurable, "held it durably"),
        (RepliesBeforeEvents, "after a reply"),
    ],
    ids=["reply-before-durable", "event-after-reply"],
)
def test_a_sweep_catches_a_bug_planted_in_the_executor(
    plant: type[ReadyExecutor], symptom: str
) -> None:
    found = sweep(plant)
    assert found, f"no seed of {SEEDS} caught {plant.__name__}"
    assert any(symptom in text for text in found), found


def test_a_planted_bug_replays_on_its_seed() -> None:
    first = sweep(RepliesBeforeEvents)[0]
    seed = int(first.split()[1].rstrip(","))
    with pytest.raises(InvariantViolation) as caught:
        run_and_check(seed, RepliesBeforeEvents)
    assert str(caught.value) == first
