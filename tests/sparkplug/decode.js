// Subscribes to spBv1.0/# and prints one JSON line per message, decoded with Eclipse Tahu's sparkplug-payload:
// {topic, type, seq, metrics: [{name, alias, value, type, historical}], unresolved?, error?}.
// Aliases are resolved from the births seen (per edge node); a metric whose alias no birth declared is
// counted in `unresolved`. Usage: node decode.js mqtt://127.0.0.1:PORT
"use strict";
const mqtt = require("mqtt");
const payloads = require("sparkplug-payload").get("spBv1.0");

const url = process.argv[2];
const client = mqtt.connect(url, { clientId: "tahu-decoder-" + process.pid, clean: true });
const aliases = new Map(); // edge node -> alias -> metric name

function plain(v) {
  if (v !== null && typeof v === "object" && typeof v.toNumber === "function") return v.toNumber();
  return v;
}

client.on("connect", () => {
  client.subscribe("spBv1.0/#", { qos: 1 }, () => console.log(JSON.stringify({ subscribed: true })));
});
client.on("message", (topic, message) => {
  const parts = topic.split("/");
  const out = { topic };
  try {
    if (parts[1] === "STATE") {
      out.type = "STATE";
      out.state = message.toString();
    } else {
      const p = payloads.decodePayload(message);
      const type = parts[2];
      const node = parts[1] + "/" + parts[3];
      if (type === "NBIRTH") aliases.set(node, new Map());
      const known = aliases.get(node);
      out.type = type;
      out.seq = p.seq === undefined || p.seq === null ? null : plain(p.seq);
      out.metrics = [];
      for (const m of p.metrics || []) {
        const alias = m.alias === undefined || m.alias === null ? null : plain(m.alias);
        if (type.endsWith("BIRTH") && alias !== null && known) known.set(alias, m.name);
        let name = m.name;
        if (name === undefined || name === null) {
          name = known ? known.get(alias) : undefined;
          if (name === undefined) out.unresolved = (out.unresolved || 0) + 1;
        }
        out.metrics.push({ name, alias, value: plain(m.value), type: m.type, historical: !!m.isHistorical });
      }
    }
  } catch (e) {
    out.error = String(e);
  }
  console.log(JSON.stringify(out));
});
client.on("error", (e) => console.error("decoder: " + e));
