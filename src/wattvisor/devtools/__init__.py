"""Tools for developing and testing wattvisor on one machine, not part of the service.

``wattvisor dev ...`` commands, ``make libvirtd``, the test suite and the benchmarks use
them; nothing under the other packages imports them (a test checks).
"""
