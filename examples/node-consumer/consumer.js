// An example subscriber in a second language (docs/architecture/consumer-guide.md):
//   npm ci && node consumer.js --brokers 127.0.0.1:9092 [--prefix ""] [--idle-ms 5000]
// It bootstraps listing states from the compacted listing-updates topic (to the end noted at start),
// then follows every output topic; validates every record against processor/schemas with Ajv (2020-12,
// strict); deduplicates on result_id / dead_letter_id / (listing_id, revision); merges classifications
// and removals per image by (event_time, removal, model.generation, model.version). With --idle-ms it
// stops once no record came for that long and prints a JSON summary (listings, images, dead letters).
"use strict";
const fs = require("fs");
const path = require("path");
const { Kafka, logLevel } = require("kafkajs");
const Ajv2020 = require("ajv/dist/2020");
const addFormats = require("ajv-formats");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const brokers = (args.brokers || "127.0.0.1:9092").split(",");
const prefix = args.prefix || "";
const idleMs = Number(args["idle-ms"] || 0);
const topics = {
  classifications: args["classifications-topic"] || `${prefix}image-classifications`,
  removals: args["removals-topic"] || `${prefix}image-removals`,
  dlq: args["dlq-topic"] || `${prefix}images-dlq`,
  listings: args["listings-topic"] || `${prefix}listing-updates`,
};

// One validator per schema $id (the schema-id header names it).
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
const schemaDir = path.join(__dirname, "..", "..", "processor", "schemas");
const validators = new Map();
for (const file of fs.readdirSync(schemaDir).filter((f) => f.endsWith(".schema.json"))) {
  const schema = JSON.parse(fs.readFileSync(path.join(schemaDir, file), "utf8"));
  validators.set(schema.$id, ajv.compile(schema));
}

const header = (message, name) => (message.headers && message.headers[name] ? message.headers[name].toString() : undefined);
const versionKey = (v) => v.split(".").map((p) => Number(p.replace(/\D/g, "")) || 0);
function compare(a, b) {
  // (event_time, removal, generation, version): the order Postgres applies
  const fields = [Date.parse(a.event_time) - Date.parse(b.event_time), a.removal - b.removal, a.generation - b.generation];
  for (const d of fields) if (d !== 0) return d;
  const va = versionKey(a.version), vb = versionKey(b.version);
  for (let i = 0; i < Math.max(va.length, vb.length); i++) if ((va[i] || 0) !== (vb[i] || 0)) return (va[i] || 0) - (vb[i] || 0);
  return 0;
}

const state = { listings: new Map(), images: new Map(), seen: new Set(), deadLetters: {}, records: 0, invalid: [] };

function check(topic, message) {
  const id = header(message, "schema-id");
  const validate = validators.get(id);
  if (!validate) throw new Error(`${topic}: unknown schema-id ${id}`);
  if (header(message, "content-type") !== "application/json") throw new Error(`${topic}: content-type`);
  if (message.value === null) return null; // a tombstone: only on the compacted listing-updates
  const value = JSON.parse(message.value.toString());
  if (!validate(value)) state.invalid.push({ topic, errors: validate.errors });
  if (value.schema_version !== header(message, "schema-version")) throw new Error(`${topic}: schema-version header`);
  return value;
}

function apply(topic, message) {
  state.records += 1;
  const value = check(topic, message);
  const key = message.key ? message.key.toString() : null;
  if (topic === topics.listings) {
    const revision = Number(header(message, "revision"));
    const known = state.listings.get(key);
    if (known && known.revision >= revision) return; // stale or duplicate
    state.listings.set(key, { revision, value }); // value null: the listing is gone
  } else if (topic === topics.dlq) {
    if (state.seen.has(value.dead_letter_id)) return;
    state.seen.add(value.dead_letter_id);
    state.deadLetters[value.error.kind] = (state.deadLetters[value.error.kind] || 0) + 1;
  } else {
    if (state.seen.has(value.result_id)) return; // a redelivery
    state.seen.add(value.result_id);
    const removal = topic === topics.removals;
    const order = { event_time: value.event_time, removal: removal ? 1 : 0, generation: removal ? 0 : value.model.generation, version: removal ? "" : value.model.version };
    const known = state.images.get(value.image_id);
    if (!known || compare(order, known.order) > 0) state.images.set(value.image_id, { order, value: removal ? null : value });
  }
}

function summary() {
  const listings = [...state.listings].filter(([, s]) => s.value !== null);
  const images = [...state.images].filter(([, s]) => s.value !== null);
  return {
    records: state.records,
    invalid: state.invalid,
    listings: Object.fromEntries(listings.map(([k, s]) => [k, { revision: s.revision, hero: s.value.hero.image_id, feed: s.value.feed }])),
    listings_gone: [...state.listings].filter(([, s]) => s.value === null).map(([k]) => k),
    images: Object.fromEntries(images.map(([k, s]) => [k, { listing_id: s.value.listing_id, position_index: s.value.position_index, position: s.value.position, has_banner: s.value.has_banner, result_id: s.value.result_id }])),
    images_removed: [...state.images].filter(([, s]) => s.value === null).map(([k]) => k),
    dead_letters: state.deadLetters,
  };
}

async function main() {
  const kafka = new Kafka({ clientId: "example-consumer", brokers, logLevel: logLevel.WARN });
  // Bootstrap: the end of every listing-updates partition, as it is now.
  const admin = kafka.admin();
  await admin.connect();
  const ends = new Map((await admin.fetchTopicOffsets(topics.listings)).map((p) => [p.partition, Number(p.high)]));
  await admin.disconnect();
  let bootstrapped = [...ends.values()].every((high) => high === 0);
  const consumer = kafka.consumer({ groupId: args.group || `example-consumer-${process.pid}-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topics: Object.values(topics), fromBeginning: true });
  let last = Date.now();
  let joined = false;
  consumer.on(consumer.events.GROUP_JOIN, () => {
    joined = true;
    last = Date.now();
  });
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      apply(topic, message);
      last = Date.now();
      if (topic === topics.listings && !bootstrapped && Number(message.offset) + 1 >= (ends.get(partition) || 0)) {
        ends.delete(partition);
        bootstrapped = [...ends.entries()].every(([, high]) => high === 0);
        if (bootstrapped) console.error(`bootstrapped: ${state.listings.size} listings; following`);
      }
    },
  });
  if (!idleMs) return;
  while (!joined || Date.now() - last < idleMs) await new Promise((r) => setTimeout(r, 200));
  await consumer.disconnect();
  console.log(JSON.stringify(summary(), null, 1));
  process.exit(state.invalid.length ? 1 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
