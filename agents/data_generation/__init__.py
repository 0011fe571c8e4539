"""Data Generation: domain training conversations with a QA feedback loop."""

from agents.data_generation.agent import DataGenerationAgent
from agents.data_generation.compositional import CompositionalGenerator, load_common
from agents.data_generation.material import DomainMaterial, load_material

__all__ = ["CompositionalGenerator", "DataGenerationAgent", "DomainMaterial", "load_common", "load_material"]
