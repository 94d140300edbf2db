curl -X POST https://your-scanner-domain/api/v1/scan \
-H "Authorization: Bearer YOUR_API_TOKEN" \
-H "Content-Type: application/json" \
-d '{"target": "192.168.1.1", "domain": "example.com"}'
