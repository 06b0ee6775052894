"""The control plane: FastAPI app, routers, services, the scheduling loop."""
