"""lodo-tune command line (placeholder until the tuner lands)."""


def main(argv=None):
    raise SystemExit("lodo-tune: not implemented yet")
