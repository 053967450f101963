"""The HTTP surface: MCP at /mcp, REST at /api/v1, and the metadata documents, as one Litestar app.

Everything here is an adapter over `memory.service.MemoryService`; the domain never imports it.
"""
