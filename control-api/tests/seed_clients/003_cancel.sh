curl -X POST https://your-scanner-domain/api/v1/scan/a1b2c3d4-e5f6-7890-abcd-ef1234567890/cancel \
-H "Authorization: Bearer YOUR_API_TOKEN"
