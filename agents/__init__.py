"""The swarm's agents, one package each; they talk to each other only through the bus."""
