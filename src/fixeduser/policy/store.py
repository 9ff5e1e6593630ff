"""The live policy: built beside the old one, validated, and swapped in with one assignment."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fixeduser.policy.compiled import CompiledPolicy, compile_policy
from fixeduser.policy.files import PolicyProblem, read_policy_dir

log = logging.getLogger(__name__)


class PolicyInvalid(Exception):
    def __init__(self, problems: tuple[PolicyProblem, ...]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def load_policy(directory: Path) -> CompiledPolicy:
    """Read and compile a policy directory; PolicyInvalid lists every problem found."""
    policy = compile_policy(read_policy_dir(directory))
    if policy.problems:
        raise PolicyInvalid(policy.problems)
    return policy


class PolicyStore:
    """Holds the policy in force. Readers take `current` once per decision; it never changes under them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.current = load_policy(directory)
        self.reloads = 0
        self.failed_reloads = 0
        self._fingerprint = self._files_fingerprint()

    def _files_fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        for path in sorted(self.directory.iterdir()):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    async def reload(self) -> bool:
        """Build a new policy off the event loop; keep the old one if the new one has any problem."""
        try:
            policy = await asyncio.to_thread(load_policy, self.directory)
        except PolicyInvalid as exc:
            self.failed_reloads += 1
            for problem in exc.problems:
                log.error(
                    "policy reload rejected, keeping version %s: %s",
                    self.current.version,
                    problem,
                    extra={"file": problem.file, "line": problem.line, "problem": problem.message},
                )
            return False
        if policy.version != self.current.version:
            self.current = policy
            self.reloads += 1
            log.info("policy version %s in force", policy.version, extra={"policy_version": policy.version})
        return True

    async def watch(self, interval: float = 0.5) -> None:
        """Reload whenever a file in the policy directory changes (mtime or size)."""
        while True:
            await asyncio.sleep(interval)
            fingerprint = await asyncio.to_thread(self._files_fingerprint)
            if fingerprint != self._fingerprint:
                self._fingerprint = fingerprint
                await self.reload()
