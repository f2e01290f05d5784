"""The frozen reference policy as a placed, sharded group."""
