// Node's smtp-server (npm) as a sink, for the side-by-side benchmarks:
// every message stream is read to its end and dropped.
//
//   NODE_PATH=$BENCH_NODE_DIR/node_modules node node_sink.js PORT
//
// Listens on 127.0.0.1:PORT; no STARTTLS, no reverse lookup of the client
// (smtp-server's default would send DNS queries), no logging.
'use strict';
const { SMTPServer } = require('smtp-server');

const port = parseInt(process.argv[2], 10);
const server = new SMTPServer({
  name: 'localhost',
  authOptional: true,
  disabledCommands: ['STARTTLS'],
  hideSTARTTLS: true,
  disableReverseLookup: true,
  logger: false,
  onData(stream, session, callback) {
    stream.on('end', () => callback(null));
    stream.resume();
  },
});
server.on('error', (err) => { console.error('server error', err && err.message); });
server.listen(port, '127.0.0.1', 1024);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
