"""`python -m errorforcing.bench SECTION [--quick]`: one section of `errorforcing bench` alone
(a name of `SECTIONS`, or `zoo` for the credit-assignment zoo's rows of "rules"), as JSON."""

import argparse
import json

from . import SECTIONS, bench_zoo

ONE_OFF = {"zoo": bench_zoo}

parser = argparse.ArgumentParser(prog="python -m errorforcing.bench",
                                 description="one section of `errorforcing bench` alone, as JSON")
parser.add_argument("section", choices=[*SECTIONS, *ONE_OFF])
parser.add_argument("--quick", action="store_true", help="fewer repeats")
args = parser.parse_args()
print(json.dumps({**SECTIONS, **ONE_OFF}[args.section](args.quick), indent=2))
