"""crmbook benchmarks: `make bench` (python -m benchmarks). Each case is timed against a named
baseline in the same run, in fresh processes, and reported as a ratio (the machine is shared)."""

#: Source of `peak_mb()`, prepended to the code each case runs in its own interpreter.
PEAK_MB = """
def peak_mb():
    \"\"\"This process's peak RSS: VmHWM belongs to the address space execve made, while ru_maxrss
    also counts the parent's peak before the exec (Linux keeps it across fork and exec).\"\"\"
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""
