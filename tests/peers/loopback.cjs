// Preload (`node --require tests/peers/loopback.cjs ...`) that makes every TCP
// server of the process listen on 127.0.0.1 only, whatever host (or none) it
// asks for. server-everything's streamableHttp mode binds all interfaces;
// tests must not expose anything beyond loopback.
'use strict';
const net = require('net');

const LOOPBACK = '127.0.0.1';
const originalListen = net.Server.prototype.listen;

net.Server.prototype.listen = function listenOnLoopback(...args) {
  const first = args[0];
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback]): keep the port and the callback.
    const callback = args.find((arg) => typeof arg === 'function');
    return callback
      ? originalListen.call(this, Number(first), LOOPBACK, callback)
      : originalListen.call(this, Number(first), LOOPBACK);
  }
  if (first && typeof first === 'object' && first.path === undefined && first.fd === undefined) {
    // listen({ port, host, ... }[, callback])
    args[0] = { ...first, host: LOOPBACK };
  }
  return originalListen.apply(this, args);
};
