"""CPU seconds from getrusage, for the standalone measuring scripts of this folder."""

import resource


def cpu_seconds(*who):
    """User plus system CPU seconds of `who` (resource.RUSAGE_SELF, RUSAGE_CHILDREN), summed."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, who or (resource.RUSAGE_SELF,)))
