#!/usr/bin/env python3
"""Time to first byte of 5 clients joining a running fill.

One client reads the first 16 MiB of URL and hangs up (the fill goes on);
then 5 clients ask for it at once. Usage (wan-bench set up, edge in bh-branch):
  ip netns exec bh-clients python3 bench/joiner_probe.py 3128 /obj/NAME 10.199.2.1
Prints (connect, status line) seconds per joiner.
"""
import socket, time, sys, threading
PORT=int(sys.argv[1]); path=sys.argv[2]; HOST=sys.argv[3] if len(sys.argv)>3 else "127.0.0.1"
def first():
    s=socket.create_connection((HOST,PORT)); s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"%path.encode())
    got=0
    while got < 16<<20:
        d=s.recv(1<<20); got+=len(d)
        if not d: break
    s.close()
th=threading.Thread(target=first); th.start(); th.join()
res=[]
def follower():
    t=time.monotonic(); s=socket.create_connection((HOST,PORT)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,1)
    tc=time.monotonic()
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nUser-Agent: bh\r\nAccept: */*\r\nConnection: close\r\n\r\n"%path.encode())
    f=s.makefile("rb"); f.readline(); tf=time.monotonic()
    res.append((round(tc-t,4), round(tf-t,4)))
    while f.read(1<<20): pass
ts=[threading.Thread(target=follower) for _ in range(5)]
[t.start() for t in ts]; [t.join() for t in ts]
print(res)
