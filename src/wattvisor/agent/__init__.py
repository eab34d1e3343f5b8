"""The host agent: what runs on each host of a cluster and answers its controllers.

:mod:`wattvisor.agent.credentials` holds the host's own key and the cluster keys the
agent checks every controller call against.
"""
