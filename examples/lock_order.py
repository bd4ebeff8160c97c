"""The lock-order checker catches an inversion the first time it happens, no deadlock needed.

Task 1 takes "accounts" then "audit-log". Later, task 2 takes "audit-log" then
"accounts". Run one after the other they never deadlock, which is why such bugs
survive testing; run together they can. With checks enabled, task 2 gets a
LockOrderError naming both locks and where the opposite order was first seen.

    python examples/lock_order.py [asyncio|trio]
"""

from __future__ import annotations

import sys

import anyio

from anyio_mutex import AsyncMutex, LockOrderError, enable_lock_order_checks


async def main() -> None:
    enable_lock_order_checks()  # or ANYIO_MUTEX_LOCK_ORDER=raise in the environment
    accounts = AsyncMutex("accounts")
    audit = AsyncMutex("audit-log")

    async def post_payment() -> None:
        async with accounts, audit:
            pass

    async def rotate_log() -> None:
        async with audit, accounts:
            pass

    await post_payment()
    print("post_payment: accounts -> audit-log recorded")
    try:
        await rotate_log()
    except LockOrderError as exc:
        print(f"rotate_log refused before it could deadlock:\n  {exc}")
    else:
        raise AssertionError("the inversion was not reported")


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
