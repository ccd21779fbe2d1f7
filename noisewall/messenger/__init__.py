"""The messenger: WhatsApp-style E2E chat (text over NoiseSocket, media over HTTPS)."""
