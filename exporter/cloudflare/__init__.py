"""The Cloudflare API client: bounded answers (``body``), paced and retried requests (``client``) and one
account's view of the API for a collector's poll (``account``). It never touches the store."""
