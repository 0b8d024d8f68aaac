"""The seed's load injector: THREADS x REQS invocations of one function (work in progress)."""

import logging

log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("fn", help="function id (or name) to invoke")
    parser.add_argument("threads", type=int, help="concurrent client threads")
    parser.add_argument("reqs", type=int, help="requests per thread")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="gateway URL")
    parser.add_argument("--input", default="test data", help="input sent to the function")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def cli(args):
    log.error("the injector is not written yet")
    return 2
