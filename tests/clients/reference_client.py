import asyncio
import websockets
import json

async def connect_orchestra(token: str):
    uri = f"ws://localhost:8080/ws/observe?token={token}"
    
    async with websockets.connect(uri) as ws:
        # Subscribe to primary agent terminal
        await ws.send(json.dumps({
            "type": "subscribe_terminal",
            "session_id": "sess-claude-primary"
        }))
        
        # Receive terminal output
        async for message in ws:
            data = json.loads(message)
            
            if data["type"] == "terminal_output":
                print(f"[{data['session_id']}] {data['data']}")
            elif data["type"] == "error":
                print(f"Error: {data['message']}")

# Usage
token = "your_jwt_token_here"
asyncio.run(connect_orchestra(token))
