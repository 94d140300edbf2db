const data = await fetch("https://securityscanner.dev/v1/runs", {
  headers: { "Authorization": "Bearer sk-sec-YOUR_KEY" },
}).then(r => r.json());
data.runs.forEach(r => console.log(r.id, r.target, r.summary.total));
