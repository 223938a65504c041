from rediffuse.console import run

run()
