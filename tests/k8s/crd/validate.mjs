// Validates prometheus-operator objects against the schemas that @kubernetes-models/prometheus-operator
// generates from the operator's API types. Reads a JSON array of objects on stdin and prints a JSON array
// of {kind, name, errors} (errors empty when valid). An object of a kind it has no schema for is an error.
import * as v1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const objects = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const results = objects.map((obj) => {
  const name = obj?.metadata?.name ?? "";
  const kind = obj?.kind ?? "";
  const Model = obj?.apiVersion === "monitoring.coreos.com/v1" ? v1[kind] : undefined;
  if (typeof Model !== "function") {
    return { kind, name, errors: [`no schema for ${obj?.apiVersion}/${kind}`] };
  }
  try {
    new Model(obj).validate();
    return { kind, name, errors: [] };
  } catch (e) {
    return { kind, name, errors: String(e?.message ?? e).split(", ") };
  }
});
process.stdout.write(JSON.stringify(results));
