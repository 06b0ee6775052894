"""Services hold the control plane's logic; routers only translate HTTP to calls of these."""
