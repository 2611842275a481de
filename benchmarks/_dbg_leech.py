import sys, gc, runpy
gc.disable()
sys.argv = ["_peer_p2pdist.py"] + sys.argv[1:]
runpy.run_path("/work/main/benchmarks/_peer_p2pdist.py", run_name="__main__")
