// An MCP client written with the official TypeScript SDK (`Client` +
// `StdioClientTransport`), exactly as Claude Code or Cursor would use Corral:
// it spawns `CORRAL mcp ARGS...` and speaks MCP to it over its stdio. With
// `--http URL --token T` it is the same client on `StreamableHTTPClientTransport`
// instead, as a client that takes a URL (VS Code) would use corrald's loopback
// HTTP endpoint, sending `Authorization: Bearer T` with every request.
//
// Usage: node mcp-bridge-client.mjs CORRAL [ARGS...]
//        node mcp-bridge-client.mjs --http URL --token T
//
// It connects (initialize), prints `{"event":"connected", ...}`, then reads
// commands from its own stdin, one JSON object a line, runs each with the
// SDK and prints one JSON line with the outcome (`{"op": ..., ...}`):
//
//   {"op":"list"}                                   -> {"op":"list","names":[...],"tools":[...]}
//   {"op":"call","name":N,"arguments":{},"progress":true}
//                                                   -> {"op":"call","result":{...},"progress":[...]} or {"op":"call","error":{code,message}}
//   {"op":"start","id":I,"name":N,"arguments":{}}  -> {"op":"start","id":I} at once; the call runs on
//   {"op":"abort","id":I}                           -> {"op":"abort","id":I,"error":{...}} once call I ended
//                                                      (aborted with an AbortSignal: the SDK sends notifications/cancelled)
//   {"op":"prompts"}                                -> {"op":"prompts","prompts":[...]}
//   {"op":"getPrompt","name":N,"arguments":{}}      -> {"op":"getPrompt","result":{...}} or {"op":"getPrompt","error":{...}}
//   {"op":"resources"}                              -> {"op":"resources","resources":[...]}
//   {"op":"templates"}                              -> {"op":"templates","resourceTemplates":[...]}
//   {"op":"read","uri":U}                           -> {"op":"read","result":{...}} or {"op":"read","error":{...}}
//   {"op":"setLevel","level":L}                     -> {"op":"setLevel"} or {"op":"setLevel","error":{...}}
//   {"op":"answers","elicitation":R,"sampling":R}   -> {"op":"answers"}: what the handlers below answer
//                                                      from now on (R: the result, or "hang": no answer)
//   {"op":"roots","roots":[...]}                    -> {"op":"roots"} once the client's roots are these and
//                                                      it sent notifications/roots/list_changed ("hang":
//                                                      roots/list is not answered from now on)
//   {"op":"wait","id":I}                            -> {"op":"wait","id":I,"result":{...}} or {..."error":{...}} once
//                                                      call I ended by itself (not aborted)
//   {"op":"terminate"}                              -> {"op":"terminate"} once the session is ended (HTTP: DELETE)
//   {"op":"close"}                                  -> {"op":"close"}, then exits 0
//
// Each `notifications/tools/list_changed` prints `{"event":"toolsListChanged"}`
// when it arrives (`promptsListChanged`, `resourcesListChanged` likewise);
// each `notifications/message` prints `{"event":"log","params":{...}}`.
//
// Server requests: with BRIDGE_CLIENT_CAPABILITIES set to a JSON object (e.g.
// `{"elicitation":{},"sampling":{}}`) the client declares those capabilities
// and, for the ones declared, handles `elicitation/create` and
// `sampling/createMessage` with the SDK's handlers: each request prints
// `{"event":"request","method":M,"params":P}` and is answered with what the
// last `answers` op set (elicitation: decline until then). A "hang" request
// waits until it is withdrawn (`notifications/cancelled`), then prints
// `{"event":"withdrawn","method":M,"reason":R}`.
//
// Roots: with BRIDGE_CLIENT_ROOTS set to a JSON array of roots (e.g.
// `[{"uri":"file:///work/a","name":"a"}]`) the client also declares
// `roots: {listChanged: true}` and answers `roots/list` with them (printing
// a `request` event for each, as above), until the `roots` op changes them.
//
// The Rust tests (tests/tests/e2e/bridge.rs, bridge_views.rs) drive it and
// asserts on the lines. Any failure, or the overall timeout, prints the reason
// on stderr and exits 1.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import {
  PromptListChangedNotificationSchema,
  ResourceListChangedNotificationSchema,
  LoggingMessageNotificationSchema,
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  ToolListChangedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import readline from "node:readline";

const OVERALL_TIMEOUT_MS = 90_000;

const [corral, ...args] = process.argv.slice(2);
const http = corral === "--http";
if (!corral || (http && (args.length !== 3 || args[1] !== "--token"))) {
  process.stderr.write("usage: node mcp-bridge-client.mjs CORRAL [ARGS...]\n       node mcp-bridge-client.mjs --http URL --token T\n");
  process.exit(2);
}

const overall = setTimeout(() => {
  process.stderr.write(`mcp-bridge-client: not done within ${OVERALL_TIMEOUT_MS} ms\n`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

function print(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function errorOf(error) {
  return { code: error?.code ?? null, message: String(error?.message ?? error), name: error?.name ?? null };
}

function makeTransport() {
  if (http) {
    const [url, , token] = args;
    return new StreamableHTTPClientTransport(new URL(url), {
      requestInit: { headers: { Authorization: `Bearer ${token}` } },
    });
  }
  return new StdioClientTransport({
    command: corral,
    args: ["mcp", ...args],
    // The whole environment (XDG_STATE_HOME, CORRAL_CONFIG…), not the SDK's short default list.
    env: { ...process.env },
    stderr: "inherit",
  });
}

async function main() {
  const transport = makeTransport();
  const capabilities = JSON.parse(process.env.BRIDGE_CLIENT_CAPABILITIES ?? "{}");
  const roots = process.env.BRIDGE_CLIENT_ROOTS === undefined ? undefined : JSON.parse(process.env.BRIDGE_CLIENT_ROOTS);
  if (roots !== undefined) capabilities.roots = { listChanged: true };
  const client = new Client({ name: "mcp-bridge-client", version: "1.0.0" }, { capabilities });
  client.setNotificationHandler(ToolListChangedNotificationSchema, () => print({ event: "toolsListChanged" }));
  client.setNotificationHandler(PromptListChangedNotificationSchema, () => print({ event: "promptsListChanged" }));
  client.setNotificationHandler(ResourceListChangedNotificationSchema, () => print({ event: "resourcesListChanged" }));
  client.setNotificationHandler(LoggingMessageNotificationSchema, (notification) =>
    print({ event: "log", params: notification.params }),
  );
  // What the server-request handlers answer; set by the `answers` op.
  const answers = { elicitation: { action: "decline" }, sampling: "hang", roots: { roots } };
  const answering = (kind) => (request, extra) => {
    print({ event: "request", method: request.method, params: request.params });
    if (answers[kind] !== "hang") return answers[kind];
    return new Promise((_resolve, reject) => {
      extra.signal.addEventListener(
        "abort",
        () => {
          print({ event: "withdrawn", method: request.method, reason: String(extra.signal.reason) });
          reject(new Error("withdrawn"));
        },
        { once: true },
      );
    });
  };
  if (capabilities.elicitation) client.setRequestHandler(ElicitRequestSchema, answering("elicitation"));
  if (capabilities.sampling) client.setRequestHandler(CreateMessageRequestSchema, answering("sampling"));
  if (roots !== undefined) client.setRequestHandler(ListRootsRequestSchema, answering("roots"));
  await client.connect(transport);
  print({
    event: "connected",
    serverVersion: client.getServerVersion(),
    capabilities: client.getServerCapabilities(),
    instructions: client.getInstructions() ?? null,
    pid: transport.pid ?? null,
    sessionId: transport.sessionId ?? null,
  });

  // Calls started and not aborted yet, by the test's id.
  const running = new Map();
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    switch (command.op) {
      case "list": {
        const { tools } = await client.listTools();
        print({ op: "list", names: tools.map((tool) => tool.name), tools });
        break;
      }
      case "call": {
        const progress = [];
        const options = command.progress ? { onprogress: (step) => progress.push(step) } : {};
        try {
          const result = await client.callTool({ name: command.name, arguments: command.arguments ?? {} }, undefined, options);
          print({ op: "call", result, progress });
        } catch (error) {
          print({ op: "call", error: errorOf(error), progress });
        }
        break;
      }
      case "start": {
        const controller = new AbortController();
        const outcome = client
          .callTool({ name: command.name, arguments: command.arguments ?? {} }, undefined, { signal: controller.signal })
          .then(
            (result) => ({ result }),
            (error) => ({ error: errorOf(error) }),
          );
        running.set(command.id, { controller, outcome });
        print({ op: "start", id: command.id });
        break;
      }
      case "abort": {
        const call = running.get(command.id);
        running.delete(command.id);
        call.controller.abort("the test cancels this call");
        print({ op: "abort", id: command.id, ...(await call.outcome) });
        break;
      }
      case "prompts": {
        const { prompts } = await client.listPrompts();
        print({ op: "prompts", prompts });
        break;
      }
      case "getPrompt": {
        try {
          print({ op: "getPrompt", result: await client.getPrompt({ name: command.name, arguments: command.arguments }) });
        } catch (error) {
          print({ op: "getPrompt", error: errorOf(error) });
        }
        break;
      }
      case "resources": {
        const { resources } = await client.listResources();
        print({ op: "resources", resources });
        break;
      }
      case "templates": {
        const { resourceTemplates } = await client.listResourceTemplates();
        print({ op: "templates", resourceTemplates });
        break;
      }
      case "read": {
        try {
          print({ op: "read", result: await client.readResource({ uri: command.uri }) });
        } catch (error) {
          print({ op: "read", error: errorOf(error) });
        }
        break;
      }
      case "setLevel": {
        try {
          await client.setLoggingLevel(command.level);
          print({ op: "setLevel" });
        } catch (error) {
          print({ op: "setLevel", error: errorOf(error) });
        }
        break;
      }
      case "answers": {
        answers.elicitation = command.elicitation ?? answers.elicitation;
        answers.sampling = command.sampling ?? answers.sampling;
        print({ op: "answers" });
        break;
      }
      case "roots": {
        answers.roots = command.roots === "hang" ? "hang" : { roots: command.roots };
        await client.sendRootsListChanged();
        print({ op: "roots" });
        break;
      }
      case "wait": {
        const call = running.get(command.id);
        running.delete(command.id);
        print({ op: "wait", id: command.id, ...(await call.outcome) });
        break;
      }
      case "terminate": {
        await transport.terminateSession();
        print({ op: "terminate" });
        break;
      }
      case "close": {
        await client.close();
        print({ op: "close" });
        clearTimeout(overall);
        process.exit(0);
      }
      default:
        throw new Error(`unknown op ${command.op}`);
    }
  }
  await client.close();
  clearTimeout(overall);
}

main().catch((error) => {
  process.stderr.write(`mcp-bridge-client: ${error?.stack ?? error}\n`);
  process.exit(1);
});
