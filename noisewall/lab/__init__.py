"""The lab: replay a censorship scenario end to end on a simulated clock and score detection."""
