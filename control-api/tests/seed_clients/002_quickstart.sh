# 1. Trigger a scan
curl -X POST https://securityscanner.dev/v1/scan \
  -H "Authorization: Bearer sk-sec-YOUR_KEY" \
  -H "Content-Type: application/json" \
  -d '{"host": "https://myapp.com"}'

# Response:
# {"run_id": "abc12345", "status": "started", ...}

# 2. Poll for results (scan takes 2-5 minutes)
curl https://securityscanner.dev/v1/scan/abc12345 \
  -H "Authorization: Bearer sk-sec-YOUR_KEY"

# 3. Download the fix file
curl https://securityscanner.dev/v1/scan/abc12345/fix \
  -H "Authorization: Bearer sk-sec-YOUR_KEY" \
  -o SECURITY-FIX.md
