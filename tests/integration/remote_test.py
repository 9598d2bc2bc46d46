"""gRPC over TCP: off unless asked, refused without TLS and a token, and with them a CLI on
another machine (here: over 127.0.0.1) can trace; a missing or wrong token is UNAUTHENTICATED
(exit 5), an untrusted certificate never connects (exit 6)."""
import os
import subprocess

import harness


class RemoteTest(harness.BpfTestCase):
    def make_pki(self):
        d = self.path("pki")
        os.makedirs(d)

        def ssl(*args):
            subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)

        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-subj", "/CN=threadscope test CA", "-days", "1")
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=threadscoped")
        with open(os.path.join(d, "san.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext")
        # A second CA the client could wrongly trust.
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
            "other.crt", "-subj", "/CN=someone else", "-days", "1")
        with open(os.path.join(d, "token"), "w") as f:
            f.write(os.urandom(24).hex() + "\n")
        with open(os.path.join(d, "wrong-token"), "w") as f:
            f.write(os.urandom(24).hex() + "\n")
        return d

    def test_tls_and_token(self):
        pki = self.make_pki()
        sock = self.path("threadscope.sock")
        # TCP without TLS and a token is refused at start-up.
        r = harness.run([harness.threadscoped(), "--socket", sock, "--listen-tcp",
                         "127.0.0.1:0"], timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("only with TLS and a bearer token", r.stderr)

        # Port 0: the daemon binds a free port and says which.
        with harness.Daemon(self.tmp.name, "--listen-tcp", "127.0.0.1:0", "--tls-cert",
                            os.path.join(pki, "server.crt"), "--tls-key",
                            os.path.join(pki, "server.key"), "--token-file",
                            os.path.join(pki, "token")) as daemon:
            port = daemon.tcp_port()
            server = ["--server", "tcp://127.0.0.1:%d" % port, "--tls-ca",
                      os.path.join(pki, "ca.crt")]

            def cli(*args, token="token", extra=()):
                flags = list(server) + list(extra)
                if token:
                    flags += ["--token-file", os.path.join(pki, token)]
                return harness.run([harness.threadscope()] + flags + list(args), timeout=120)

            r = cli("status")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("threadscoped", r.stdout + r.stderr)
            # A whole trace over TCP.
            report = self.path("remote.json")
            r = cli("run", "--report", report, "--", harness.DEBIAN_PYTHON,
                    os.path.join(harness.PROGRAMS, "contention.py"), "0.005", "5")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertGreater(sum(l["contended"] for l in harness.load_json(report)["locks"]), 0)

            r = cli("status", token="wrong-token")
            self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
            self.assertIn("token", r.stderr)
            r = cli("status", token=None)
            self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
            self.assertIn("--token-file", r.stderr)
            # Trusting the wrong CA (the same call as the first, which succeeded, but for the
            # CA): the handshake fails, nothing is sent.
            r = harness.run([harness.threadscope(), "--server", "tcp://127.0.0.1:%d" % port,
                             "--tls-ca", os.path.join(pki, "other.crt"), "--token-file",
                             os.path.join(pki, "token"), "status"], timeout=60)
            self.assertEqual(r.returncode, 6, r.stdout + r.stderr)


if __name__ == "__main__":
    harness.main()
