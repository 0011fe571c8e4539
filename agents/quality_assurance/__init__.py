"""Quality Assurance: data filtering now, model validation with the model issue; the go/no-go gate."""

from agents.quality_assurance.agent import QualityAssuranceAgent
from agents.quality_assurance.data_filter import ALL_RULES, DataFilter

__all__ = ["ALL_RULES", "DataFilter", "QualityAssuranceAgent"]
