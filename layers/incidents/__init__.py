"""Incidents (数字城管): the closed loop, working time, rates, Open311 and exports."""
