"""The libvirt host driver: connection, capability traits, inventory, lifecycle, shares.

The controller never imports libvirt; it reaches a host only through the small
interface this package offers (in-process today, over HTTP when hosts run agents).
"""
