// A third-party Sparkplug B edge node built with Eclipse Tahu's sparkplug-client. The test drives it through
// stdin, one JSON command a line, and reads one JSON line per happening on stdout.
//   {"op":"birth","device":"press-7","metrics":[{"name":"Status","type":"Int32","value":1}]}  NBIRTH + DBIRTH
//   {"op":"ddata","device":"press-7","metrics":[{"name":"Status","type":"Int32","value":2}]}
//   {"op":"ddeath","device":"press-7"}
//   {"op":"raw_seq","seq":N}    the next message takes seq N (to make a gap)
//   {"op":"stop"}               NDEATH, then disconnect
// Prints {"event":"connected"}, {"event":"ncmd","rebirth":true}, {"event":"done","op":...} after each command.
// Usage: node edge.js mqtt://127.0.0.1:PORT GROUP NODE CLIENT_ID
"use strict";
const sparkplug = require("sparkplug-client");
const readline = require("readline");

const [url, groupId, edgeNode, clientId] = process.argv.slice(2);
const client = sparkplug.newClient({
  serverUrl: url,
  username: "",
  password: "",
  groupId,
  edgeNode,
  clientId,
  version: "spBv1.0",
  publishDeath: true,
});
const say = (o) => console.log(JSON.stringify(o));
const stamp = (metrics) => (metrics || []).map((m) => Object.assign({ timestamp: Date.now() }, m));

client.on("birth", () => say({ event: "connected" }));
client.on("ncmd", (payload) => {
  const rebirth = (payload.metrics || []).some((m) => m.name === "Node Control/Rebirth" && m.value === true);
  say({ event: "ncmd", rebirth });
});
client.on("error", (e) => say({ event: "error", error: String(e) }));

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const c = JSON.parse(line);
  const now = Date.now();
  switch (c.op) {
    case "birth":
      client.publishNodeBirth({ timestamp: now, metrics: [{ name: "Node Control/Rebirth", type: "Boolean", value: false }] });
      client.publishDeviceBirth(c.device, { timestamp: now, metrics: stamp(c.metrics) });
      break;
    case "ddata":
      client.publishDeviceData(c.device, { timestamp: now, metrics: stamp(c.metrics) });
      break;
    case "ddeath":
      client.publishDeviceDeath(c.device, { timestamp: now, metrics: [] });
      break;
    case "raw_seq":
      client.seq = c.seq;
      break;
    case "stop":
      client.stop();
      break;
    default:
      say({ event: "error", error: "unknown op " + c.op });
      return;
  }
  say({ event: "done", op: c.op });
});
