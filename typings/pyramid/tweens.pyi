INGRESS: str
MAIN: str
EXCVIEW: str
