"""The ServerApp: sample clients -> aggregate -> evaluate -> write results."""
