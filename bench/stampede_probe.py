#!/usr/bin/env python3
"""Time to first byte of N clients that ask an edge for one cold URL at once.

A plain threaded client without body hashing, to tell the edge's latency from
a load generator's. Usage (wan-bench set up, edge running in bh-branch):
  ip netns exec bh-clients python3 bench/stampede_probe.py 10.199.2.1 3128 /obj/NAME 40
Prints the TTFB median, min and max, and the worst connect time.
"""
import socket, time, sys, threading
HOST=sys.argv[1]; PORT=int(sys.argv[2]); path=sys.argv[3]; N=int(sys.argv[4])
res=[None]*N
t0=time.monotonic()+0.3
def cl(i):
    time.sleep(max(0,t0-time.monotonic()))
    t=time.monotonic(); s=socket.create_connection((HOST,PORT)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,1)
    tc=time.monotonic()
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nUser-Agent: bh\r\nAccept: */*\r\nConnection: close\r\n\r\n"%path.encode())
    f=s.makefile("rb"); f.readline(); tf=time.monotonic()
    res[i]=(round(tc-t,4), round(tf-t,4), round(t-t0,4))
    got=0
    while got < 1<<20:
        d=f.read1(1<<16)
        if not d: break
        got+=len(d)
    s.close()
ts=[threading.Thread(target=cl,args=(i,)) for i in range(N)]
[t.start() for t in ts]; [t.join() for t in ts]
print("wall epoch", time.time())
fb=sorted(r[1] for r in res); print("ttfb p50", fb[N//2], "min", fb[0], "max", fb[-1]); print("connect max", max(r[0] for r in res), "start skew max", max(r[2] for r in res))
