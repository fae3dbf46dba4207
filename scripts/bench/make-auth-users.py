#!/usr/bin/env python3
"""Users with passwords for the digest benchmarks (python3 standard library only).

  make-auth-users.py OUTDIR COUNT [DOMAIN=legacy.test] [PREFIX=auser]

Writes the same COUNT users, each with her own password, three ways:
  OUTDIR/users.csv     SIPp -inf file (SEQUENTIAL): user;domain;password
  OUTDIR/node-users    the node's users file (as `p2psip users add` writes it:
                       AOR md5=HA1 sha256=HA1, realm = the domain)
  OUTDIR/kamdb/        a db_text database for Kamailio: `htable` (key = user,
                       value = the MD5 HA1, loaded by the htable module) and `version`
The password of user N is derived from N, so a rerun gives the same users.
"""
import hashlib
import os
import sys

out, n = sys.argv[1], int(sys.argv[2])
dom = sys.argv[3] if len(sys.argv) > 3 else "legacy.test"
pre = sys.argv[4] if len(sys.argv) > 4 else "auser"
os.makedirs(os.path.join(out, "kamdb"), exist_ok=True)
with open(os.path.join(out, "users.csv"), "w") as csv, \
     open(os.path.join(out, "node-users"), "w") as node, \
     open(os.path.join(out, "kamdb", "htable"), "w") as kam:
    csv.write("SEQUENTIAL\n")
    kam.write("id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int) \n")
    for i in range(1, n + 1):
        user = f"{pre}{i:06d}"
        pw = "pw" + hashlib.sha1(f"{user}/bench".encode()).hexdigest()[:12]
        a1 = f"{user}:{dom}:{pw}".encode()
        md5, sha = hashlib.md5(a1).hexdigest(), hashlib.sha256(a1).hexdigest()
        csv.write(f"{user};{dom};{pw}\n")
        node.write(f"{user}@{dom} md5={md5} sha256={sha}\n")
        kam.write(f"{i}:{user}:0:0:{md5}:0\n")
with open(os.path.join(out, "kamdb", "version"), "w") as v:
    v.write("id(int,auto) table_name(string) table_version(int) \n0:version:1\n0:htable:2\n")
