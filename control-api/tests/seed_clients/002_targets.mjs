const h = { "Authorization": "Bearer sk-sec-YOUR_KEY" };

// List
const targets = await fetch("https://securityscanner.dev/v1/targets", { headers: h }).then(r => r.json());

// Add
await fetch("https://securityscanner.dev/v1/targets", {
  method: "POST",
  headers: { ...h, "Content-Type": "application/json" },
  body: JSON.stringify({ host: "https://staging.myapp.com", label: "staging" }),
});
