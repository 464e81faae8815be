"""Model builders: each config in conf/model/ names one of these classes as its _target_."""
