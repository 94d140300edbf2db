const API = "https://securityscanner.dev";
const KEY = "sk-sec-YOUR_KEY";
const H = { Authorization: `Bearer ${KEY}` };

// 1. Trigger
const started = await fetch(`${API}/v1/scan`, {
  method: "POST",
  headers: { ...H, "Content-Type": "application/json" },
  body: JSON.stringify({ host: "https://myapp.com" }),
}).then(r => r.json());

const runId = started.run_id;

// 2. Poll
let status;
while (true) {
  status = await fetch(`${API}/v1/scan/${runId}`, { headers: H }).then(r => r.json());
  if (status.status === "completed") break;
  await new Promise(r => setTimeout(r, 10000));
}

console.log(`Found ${status.summary.total} findings`);
for (const f of status.findings) {
  console.log(`  [${f.severity}] ${f.title}`);
}

// 3. Fix file
const fix = await fetch(`${API}/v1/scan/${runId}/fix`, { headers: H }).then(r => r.text());
require("fs").writeFileSync("SECURITY-FIX.md", fix);
