"""p2pdist: peer-to-peer distribution of software packages for SMS/SCCM sites.

SMS keeps deciding what is installed where; p2pdist moves the bytes with BitTorrent so that a
package crosses each branch office's WAN link about once.
"""

__version__ = "0.1.0"
