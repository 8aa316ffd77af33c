"""The worker side: what runs inside each Ray Train worker (data, model, schedule, loop, checkpoint)."""
