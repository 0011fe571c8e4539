"""Typed inputs and outputs of each agent's tools, one module per agent.

They live in ``protocol`` so that clients (CLI, MCP gateway, other agents) can build and read
tool calls without importing the agents themselves.
"""
