"""The Controller stand-in (tests/controller/standin.py) for the packaging proofs.

    python3 controller-standin.py ENVFILE [--port N] [--fog UUID --token TOKEN]
                                  [--microservice UUID IMAGE]

Runs in the proof's container, beside tests/ copied next to this file, on
127.0.0.1 (port N, or any free one). It knows one fog without a router
microservice: a new one with a provisioning key (prove-systemd.sh: iofogctl
provisions it), or, with --fog and --token, a node that is already
provisioned with that uuid and Controller token (prove-migrate.sh: the Java
agent's node), optionally running one microservice. Once it listens it writes
URL=, KEY=, FOG= lines (shell syntax) to ENVFILE. Serves until SIGTERM.
"""
import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tests.controller.standin import TOKEN_LIFETIME, ControllerStandIn  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("envfile")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fog")
    parser.add_argument("--token")
    parser.add_argument("--microservice", nargs=2, metavar=("UUID", "IMAGE"))
    args = parser.parse_args()
    standin = ControllerStandIn()
    standin.port = args.port
    standin.start()
    fog = standin.create_fog("proof-node", router_mode="none", uuid=args.fog)
    key = standin.provisioning_key(fog)
    if args.token:
        with standin.lock:
            standin.fogs[fog].token = args.token
            standin.fogs[fog].token_expiry = standin.clock() + TOKEN_LIFETIME
    if args.microservice:
        uuid, image = args.microservice
        standin.add_microservice(fog, "proof-microservice", uuid=uuid, images={1: image, 2: image},
                                 rebuild=False, cmd=["sleep", "86400"])
    with open(args.envfile + ".tmp", "w") as out:
        out.write(f"URL={standin.url}\nKEY={key}\nFOG={fog}\n")
    os.rename(args.envfile + ".tmp", args.envfile)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    standin.stop()


if __name__ == "__main__":
    # Blocked before the server's threads start, so that sigwait receives them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
