// A proxyless Node gRPC client for the xds-server tests: `node xds_calls.js TARGET N` makes N
// unary calls to /test.Stream/Who (raw bytes, as tests/fixtures/grpc_peers.py serves it) through
// TARGET (xds:///NAME, configured by the bootstrap GRPC_XDS_BOOTSTRAP names), each waiting for
// the channel to be ready up to 10 s, with xDS credentials, and prints one JSON line:
// {"answers": {NAME: n, ...}, "errors": {"CODE: details": n, ...}}.
'use strict';

const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');

xds.register();

const [target, count] = process.argv.slice(2);
const n = Number(count);
if (!target || !Number.isInteger(n) || n < 1) {
  console.error('usage: node xds_calls.js TARGET N');
  process.exit(2);
}

const raw = (b) => b;
// xDS credentials: each cluster's TLS (mesh mTLS, gRFC A29), plaintext where it has none.
const creds = new xds.XdsChannelCredentials(grpc.credentials.createInsecure());
const client = new grpc.Client(target, creds);
const answers = {};
const errors = {};

function who() {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + 10000);
    client.makeUnaryRequest(
      '/test.Stream/Who', raw, raw, Buffer.alloc(0),
      new grpc.Metadata({ waitForReady: true }), { deadline },
      (err, reply) => {
        if (err) {
          const key = `${grpc.status[err.code]}: ${err.details}`;
          errors[key] = (errors[key] || 0) + 1;
        } else {
          const name = reply.toString();
          answers[name] = (answers[name] || 0) + 1;
        }
        resolve();
      });
  });
}

(async () => {
  for (let i = 0; i < n; i++) {
    await who();
  }
  console.log(JSON.stringify({ answers, errors }));
  client.close();
  process.exit(0);
})();
