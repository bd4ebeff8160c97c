"""Per-account transfers with KeyedMutex: same account serialized, others in parallel.

Each transfer locks its two accounts in a fixed order (sorted), the rule that keeps two
opposite transfers from deadlocking. Balances stay exact, and the keyed lock holds no
memory for accounts nobody is using.

    python examples/keyed_mutex.py [asyncio|trio]
"""

from __future__ import annotations

import random
import sys

import anyio
from anyio.lowlevel import checkpoint

from anyio_mutex import KeyedMutex

ACCOUNTS = 20
TRANSFERS = 2000


async def main() -> None:
    balances = dict.fromkeys(range(ACCOUNTS), 1000)
    keyed: KeyedMutex[int] = KeyedMutex("accounts")
    rng = random.Random(42)

    async def transfer(src: int, dst: int, amount: int) -> None:
        first, second = sorted((src, dst))
        async with keyed.hold(first, label=f"{src}->{dst}"), keyed.hold(second):
            src_balance = balances[src]
            await checkpoint()  # e.g. a database round-trip
            balances[src] = src_balance - amount
            balances[dst] += amount

    async with anyio.create_task_group() as tg:
        for _ in range(TRANSFERS):
            src, dst = rng.sample(range(ACCOUNTS), 2)
            tg.start_soon(transfer, src, dst, rng.randrange(1, 50))

    stats = keyed.statistics()
    print(f"{TRANSFERS} concurrent transfers between {ACCOUNTS} accounts")
    print(f"total money: {sum(balances.values())} (was {ACCOUNTS * 1000})")
    print(
        f"acquisitions={stats.total_acquisitions} contended={stats.contended_acquisitions} "
        f"keys in memory now={stats.keys}"
    )
    assert sum(balances.values()) == ACCOUNTS * 1000
    assert stats.keys == 0


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
