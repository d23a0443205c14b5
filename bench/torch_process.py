"""What a PyTorch benchmark process reports about itself besides its timings: the BLAS and LAPACK
libraries it mapped (the benchmarks compare only against OpenBLAS's OpenMP variant) and its peak
resident memory."""

import os
import re
import resource

BLAS_LIBRARY = re.compile(r"^lib(open)?blas|^liblapack")


def loaded_blas():
    """Sorted paths of the BLAS, OpenBLAS and LAPACK libraries mapped into this process."""
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and BLAS_LIBRARY.match(os.path.basename(fields[5].strip())):
                paths.add(fields[5].strip())
    return sorted(paths)


def peak_rss_mib():
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
