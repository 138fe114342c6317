// A front-end written with vscode-jsonrpc (the JSON-RPC library behind VS Code's
// language clients), talking to corrald over its Unix socket in Content-Length
// framing, exactly as an editor extension would.
//
// Usage: node vscode-jsonrpc-client.mjs SOCKET_PATH [elicitation]
//
// With `elicitation` (the daemon runs a server-everything named `everything`):
// it declares it can answer elicitations, answers the daemon's
// mcpServer/elicitation/request with `accept`, calls a long-running tool with
// a progress token, and prints what it saw as one JSON line.
//
// Otherwise it initializes, calls mcpServer/list and daemon/status, asks the daemon (run
// with CORRAL_TEST_HOOKS=1) to emit three notifications and waits for them,
// calls an unknown method and catches the error, then prints ONE JSON summary
// line on stdout and exits 0. Any failure, or the overall timeout, prints the
// reason on stderr and exits 1. The Rust test (tests/tests/e2e/vscode_jsonrpc.rs)
// asserts on the summary.

import net from "node:net";
import {
  createMessageConnection,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-jsonrpc/node";

const OVERALL_TIMEOUT_MS = 15_000;
const EXPECTED_NOTIFICATIONS = 3;

const socketPath = process.argv[2];
const mode = process.argv[3] ?? "basic";
if (!socketPath) {
  process.stderr.write("usage: node vscode-jsonrpc-client.mjs SOCKET_PATH\n");
  process.exit(2);
}

const overall = setTimeout(() => {
  process.stderr.write(`vscode-jsonrpc client: no result within ${OVERALL_TIMEOUT_MS} ms\n`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

function connect(path) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

async function main() {
  const socket = await connect(socketPath);
  const connection = createMessageConnection(new StreamMessageReader(socket), new StreamMessageWriter(socket));

  const notifications = [];
  let notificationsArrived;
  const allNotifications = new Promise((resolve) => {
    notificationsArrived = resolve;
  });
  connection.onNotification("mcpServer/startupStatus/updated", (params) => {
    notifications.push(params);
    if (notifications.length === EXPECTED_NOTIFICATIONS) {
      notificationsArrived();
    }
  });
  connection.listen();

  const initialize = await connection.sendRequest("initialize", {
    protocolVersion: 1,
    clientInfo: { name: "vscode-jsonrpc-peer", version: "10.0.0" },
  });
  const list = await connection.sendRequest("mcpServer/list", {});
  const status = await connection.sendRequest("daemon/status", {});
  const emitted = await connection.sendRequest("debug/emitTestEvents", {
    count: EXPECTED_NOTIFICATIONS,
    name: "from-vscode-jsonrpc",
  });
  await allNotifications;

  let unknownMethod = null;
  try {
    await connection.sendRequest("no/such/method", {});
  } catch (error) {
    if (!(error instanceof ResponseError)) {
      throw error;
    }
    unknownMethod = { code: error.code, message: error.message };
  }

  const summary = {
    protocolVersion: initialize.protocolVersion,
    daemonPid: initialize.daemonInfo.pid,
    replayCapacity: initialize.replayCapacity,
    serverNames: list.servers.map((server) => server.name),
    statusSocketPath: status.socketPath,
    statusConnections: status.connections,
    emittedLastSeq: emitted.lastSeq,
    notificationSeqs: notifications.map((n) => n.seq),
    notificationNames: notifications.map((n) => n.name),
    notificationStatuses: notifications.map((n) => n.status),
    unknownMethod,
  };
  connection.dispose();
  socket.end();
  return summary;
}

async function elicitation() {
  const socket = await connect(socketPath);
  const connection = createMessageConnection(new StreamMessageReader(socket), new StreamMessageWriter(socket));
  const asked = [];
  connection.onRequest("mcpServer/elicitation/request", (params) => {
    asked.push({ server: params.server, message: params.request.message });
    return { action: "accept", content: { name: "VS Code", check: true } };
  });
  const progress = [];
  connection.onNotification("mcpServer/progress", (params) => {
    progress.push({ token: params.progressToken, progress: params.progress, total: params.total });
  });
  connection.listen();
  await connection.sendRequest("initialize", {
    protocolVersion: 1,
    clientInfo: { name: "vscode-jsonrpc-peer", version: "10.0.0" },
    capabilities: { elicitation: true },
  });
  const elicited = await connection.sendRequest("tools/call", {
    server: "everything",
    name: "trigger-elicitation-request",
    arguments: {},
  });
  const long = await connection.sendRequest("tools/call", {
    server: "everything",
    name: "trigger-long-running-operation",
    arguments: { duration: 0.4, steps: 2 },
    _meta: { progressToken: 42 },
  });
  connection.dispose();
  socket.end();
  const texts = (result) => result.content.map((item) => item.text).join("\n");
  return { asked, elicitedText: texts(elicited), longText: texts(long), progress };
}

(mode === "elicitation" ? elicitation() : main()).then(
  (summary) => {
    clearTimeout(overall);
    // Exit only once the line is flushed, even when stdout is a pipe.
    process.stdout.write(`${JSON.stringify(summary)}\n`, () => process.exit(0));
  },
  (error) => {
    process.stderr.write(`vscode-jsonrpc client failed: ${error && error.stack ? error.stack : error}\n`);
    process.exit(1);
  },
);
