import sys

try:
    from .cli import main
    code = main()
except KeyboardInterrupt:          # Ctrl-C before the solver's own handling is in place
    sys.stderr.write("solver: interrupted during start-up; no checkpoint was written\n")
    code = 130
sys.exit(code)
