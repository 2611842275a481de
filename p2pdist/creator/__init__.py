"""Making package torrents: scan a file, folder or DP share, hash pieces on every core, build.

``scan`` turns a path into an ordered file list, ``hashing`` computes piece hashes, ``build``
makes the info dictionary and torrent bytes, ``share`` handles a whole distribution-point
share with its manifest, ``output`` writes files atomically and ``cli`` holds the commands.
The package imports only what those need, so ``p2pdist create`` starts quickly.
"""
