"""Wire protocol to the sensor and actuator firmware (gateway side: never imports torch)."""
