"""`minifaas bench`: run scenarios against fresh stacks and write results, reports and plots."""

import logging

log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("scenarios", nargs="*", help="scenario files (default: the default set in scenarios/)")
    parser.add_argument("--out", default="results", help="output directory (default results)")


def cli(args):
    log.error("the bench is not written yet")
    return 2
